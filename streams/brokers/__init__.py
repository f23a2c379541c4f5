"""Broker launchers: the embedded tansu broker and real Apache Kafka (KRaft, from Maven jars)."""
