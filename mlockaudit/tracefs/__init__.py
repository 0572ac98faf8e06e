"""Everything ftrace: trace_pipe line parsing, entry/exit pairing, probes, the live source."""
