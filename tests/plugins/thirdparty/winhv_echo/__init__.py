"""winhv-echo: a device pair that sends every packet back, for winhv's plugin tests."""
