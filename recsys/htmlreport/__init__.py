"""``recsys report``: one self-contained HTML page of a run (data health, funnel, long tail,
training, the model against the baselines, a gallery of users, audiences, searches)."""
