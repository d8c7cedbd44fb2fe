"""The shared core every layer may import: user errors, the name registry, device helpers, and the
head and batch types that tasks, models and the runner exchange. It imports nothing of ours."""
