"""The Faust agents of the learning loop: ingest (validate + dead-letter), join (event time,
state per partition with a changelog), reward, learn, remember (Q2E), snapshot. Agents are
thin: decode, call pure logic, emit."""
