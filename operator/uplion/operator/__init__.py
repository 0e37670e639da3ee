"""uplion operator: AIModel resources into worker Deployments, RBAC and KEDA ScaledObjects."""
