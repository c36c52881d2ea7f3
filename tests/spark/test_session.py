"""The SparkSession recsys builds: settings that only take effect when the JVM starts."""

from __future__ import annotations

from ..conftest import TEST_JIT_OPTIONS as JIT_OPTIONS  # what the tests' session is configured with


def test_the_driver_jvm_was_started_with_the_configured_jit_options(spark):
    jvm = spark.sparkContext._jvm
    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    missing = [opt for opt in JIT_OPTIONS.split() if opt not in args]
    assert not missing, f"the JVM runs without {missing}; its arguments: {args}"
    # and HotSpot took them: each flag's value as the running VM reports it
    hotspot = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    for opt in JIT_OPTIONS.split():
        name, value = opt.removeprefix("-XX:").split("=")
        assert hotspot.getVMOption(name).getValue() == value
