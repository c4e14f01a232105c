"""Search: spaces, the per-trial objective, executors and campaigns. Never imports TVM."""
