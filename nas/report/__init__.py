"""Pareto fronts, reports and (later) hardware-targeted selection."""
