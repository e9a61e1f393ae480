"""The rollback engine: canary measurements in, a promote / rollback / review / pause decision out.

Nothing here knows pytest, config files beyond the decision matrix it is handed, or the
reference stack. A suite measures the candidate (health, a short load stage, an isolation
smoke run) and turns what it saw into `analysis.Measurement` values, each naming the kind of
issue it would reveal; `analysis.decide` reads them against a `matrix.DecisionMatrix`.

- `matrix`: the decision matrix (shipped as `decision_matrix.toml`), loading, validation and
  a user's overrides.
- `analysis`: measurements, the decision and its reasons, measurements from criteria.
- `canary`: the candidate's latency against the baseline's (Mann-Whitney U, one-sided).
"""
