"""Runtime pieces every Jobsprint service shares: settings base, Kafka, Postgres, logging."""
