"""REST routes: tasks (translate/summarize/answer), models, health, metrics."""
