"""The only bridge between edge and cloud: the simulated channel (budgets, delays, sync), the
modelled cost columns, and the cloud meter (counted FLOPs and measured seconds)."""
