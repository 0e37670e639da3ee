output "vpc_id" {
  description = "VPC of the stack."
  value       = aws_vpc.this.id
}

output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name <this>)."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "EKS API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the EKS API."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "postgres_endpoint" {
  description = "RDS endpoint (host:port)."
  value       = aws_db_instance.postgres.endpoint
}

output "postgres_secret_arn" {
  description = "Secrets Manager secret holding the RDS master credentials (rotated by RDS)."
  value       = aws_db_instance.postgres.master_user_secret[0].secret_arn
}

output "redis_endpoint" {
  description = "ElastiCache endpoint (the configuration endpoint with cluster mode)."
  value       = local.redis_host
}

output "database_url" {
  description = "PostgreSQL URL for the uplion-database Secret."
  value       = local.database_url
  sensitive   = true
}

output "redis_cluster_mode" {
  description = "Whether Redis runs in cluster mode (the platform module's redis_cluster)."
  value       = var.redis_cluster_mode
}

output "redis_url" {
  description = "Redis URL (TLS) for the uplion-redis Secret."
  value       = local.redis_url
  sensitive   = true
}
