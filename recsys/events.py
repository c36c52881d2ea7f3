"""The event types of the raw-log contract and their indices in the model's inputs.

A neutral module without Spark or torch: the tables, the profile builders and the served
model (which carries no Spark) all read the same mapping from here."""

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "search")
# Index 0 is padding in the model's event-type embedding.
EVENT_TYPE_INDEX = {t: i + 1 for i, t in enumerate(EVENT_TYPES)}
FUNNEL_RANK = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}
