output "api_url" {
  description = "Base URL of the OpenAI-compatible API (add /v1 for SDKs). Empty until the load balancer has an address: run `tofu refresh` a minute later."
  value       = module.platform.api_url
}

output "kubeconfig_command" {
  description = "Points kubectl at the new cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.aws.cluster_name}"
}

output "first_admin_command" {
  description = "Creates the first admin and prints its admin token once (keep it)."
  value       = "kubectl -n ${module.platform.namespace} exec deploy/uplion-accounts -- uplion-accounts bootstrap-admin admin@example.com"
}

output "postgres_endpoint" {
  description = "RDS endpoint."
  value       = module.aws.postgres_endpoint
}

output "redis_endpoint" {
  description = "ElastiCache endpoint."
  value       = module.aws.redis_endpoint
}
