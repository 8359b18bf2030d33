"""Everything the pipeline says to MLflow: the only package that imports mlflow.

- `store`: the store's URI, its reachability and the experiment (imports MLflow only when used);
- `recorder`: the run of one job, opened, recorded into and closed;
- `parents`: a sweep's parent run;
- `runs`: runs read back for comparisons.
"""
