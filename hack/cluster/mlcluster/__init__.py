"""Test-cluster harness for mlmodel: brings up a local Kubernetes cluster (or uses kind / an
existing one), builds and loads the images, and tears it all down again.

Run it as ``python3 hack/cluster/cluster.py {up,down,images,status,env}`` (the Makefile targets
``cluster-up``, ``cluster-down`` and ``images`` do that). It uses only the standard library, so
it works before ``make install`` has created the virtualenv.
"""
