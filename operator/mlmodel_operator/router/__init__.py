"""The traffic router in front of a ModelDeployment's variants: nginx with a Lua module.

- ``traffic``: the split (weights applied to the ready variants) and the nginx configuration it renders;
- ``objects``: the router's Kubernetes objects (ConfigMap, Deployment, PodDisruptionBudget);
- ``router.lua``: the Lua module nginx loads (per-variant metrics, the mirror's copies).

Its image is ``Dockerfile.router`` at the repository's root.
"""
