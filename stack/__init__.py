"""The Kubernetes profile's topology started on one machine, from the chart's own rendered manifests.

Not part of the installed package: a harness for tests (tests/stack/), benchmarks and ``make stack``.
Each workload the chart renders runs as its own process in its own empty working directory, with the
command, arguments and environment read from the manifests (:mod:`stack.manifests`); Airflow's
components run with the configuration ``charts/airflow-values.yaml`` gives them (:mod:`stack.airflow`);
PostgreSQL, Redis, an S3-compatible server, a git server, Prometheus and Alertmanager are real servers
(:mod:`stack.backing`); Service names resolve through ``/etc/hosts`` (:mod:`stack.hosts`).
"""
