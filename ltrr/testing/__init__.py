"""The broker harness: the embedded tansu broker and real Apache Kafka (KRaft, from Maven
jars, with SASL/TLS listeners for tests). Used by the test suites and benchmarks, and by
``ltrr broker`` and ``ltrr demo``; production runs a Kafka cluster of its own."""
