"""Monitoring at central: closed windows of the prediction log and the feedback, their drift,
performance and label-free estimate, stored as time series; alerts and their actions.

- ``metrics``: the numbers of one window against a reference (pure numpy/pandas);
- ``frames``: the prediction log and feedback as flat, row-per-prediction frames;
- ``windows``: window boundaries (hourly, daily, monthly in UTC, and the rolling one);
- ``service``: which windows closed, what they say, the alerts and their actions;
- ``backfill``: a prediction log from another system, imported as log segments.
"""
