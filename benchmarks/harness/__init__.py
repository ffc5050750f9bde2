"""The benchmark harness: processes, servers, one measurement, the report."""
