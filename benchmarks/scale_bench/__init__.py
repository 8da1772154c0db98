"""Tens of thousands of Coral tasks in flight on one machine: sizing, sampling, report, chart.

`bench_scale.py` runs the shipped Coral config on the local runtime against simulator
replicas started by peerflow itself; a thread of the same process samples it once a second
(`sampler`), `analysis` turns the samples into rates and a steady-state summary, `plot`
draws them.
"""
