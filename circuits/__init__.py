"""The reproductions, one script per experiment. Installed as `interp.circuits` (so `interp ioi` runs the same
code) and runnable as scripts: `python circuits/ioi.py --model gpt2`. Not a top-level `circuits` package: that
name belongs to an unrelated project on PyPI."""
