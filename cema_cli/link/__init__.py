"""The only bridge between edge and cloud: the simulated channel (budgets, delays, sync), the
modelled cost columns, and the cloud meter (counted FLOPs and measured seconds); and the real
link that puts the cloud half in another process (``cema serve``): the wire format, the server,
the edge's client, shaping, and a local server for ``--link live``."""
