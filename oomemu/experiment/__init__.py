"""Config-driven experiments (DESIGN §11): sweep files (`spec`), key paths (`keypath`), per-run metrics
(`metrics`), the engines that run them (`engine`: a local pool, Ray), the results table and summary
(`results`), the plots (`plots`, and `runplot` for one run's timeline), and the driver (`sweep`)."""
