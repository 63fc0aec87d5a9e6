"""mlmodel-operator: reconciles ModelDeployments into Deployments, Services and HPAs."""

__version__ = "0.1.0"
