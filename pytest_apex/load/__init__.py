"""The generic load engine: staged plans in, exact latency histograms and judgements out.

Nothing here knows pytest, config files or the reference stack. A suite builds a plan
(`stages`), hands the engine a session factory (`engine.SessionFactory`; `http` has a ready
one), runs it (`engine.run_plan`, or `workers.run_workers` for several processes) and judges
the `measure.PlanResult` with `verdict`.
"""
