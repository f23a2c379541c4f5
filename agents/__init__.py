"""The Faust agents of the learning loop: ingest (validate + dead-letter), and later join,
reward, learn, remember (Q2E) and snapshot. Agents are thin: decode, call pure logic, emit."""
