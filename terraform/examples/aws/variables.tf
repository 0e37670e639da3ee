variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name of the stack (the EKS cluster, RDS and ElastiCache names derive from it)."
  type        = string
  default     = "uplion"
}

variable "image_registry" {
  description = "Registry you pushed the uplion images to (e.g. <account>.dkr.ecr.<region>.amazonaws.com)."
  type        = string
}

variable "image_tag" {
  description = "Tag of the uplion images."
  type        = string
  default     = "0.1.0"
}

variable "session_secret" {
  description = "32+ random characters that sign admin sessions (openssl rand -hex 32)."
  type        = string
  sensitive   = true
}

variable "redis_auth_token" {
  description = "Redis AUTH token, 16-128 characters without @ \" / (openssl rand -hex 32)."
  type        = string
  sensitive   = true
}

variable "tls_certificate_file" {
  description = "PEM certificate (chain) file the API serves on 443 (your domain's, or a self-signed one for a trial)."
  type        = string
}

variable "tls_private_key_file" {
  description = "PEM private key file of tls_certificate_file."
  type        = string
}

variable "gpu_node_group" {
  description = "Add a GPU node group for GPU workers."
  type        = bool
  default     = false
}

variable "redis_cluster_mode" {
  description = "ElastiCache in cluster mode (sharded); the services then connect in cluster mode."
  type        = bool
  default     = false
}

variable "istio_charts_path" {
  description = "Local Istio charts (manifests/charts of an istio.io/istio source); empty: Istio's chart repository."
  type        = string
  default     = ""
}

variable "uplion_chart" {
  description = "Path of the uplion chart; empty: deploy/helm/uplion of this checkout."
  type        = string
  default     = ""
}

variable "postgres_deletion_protection" {
  description = "Keep RDS from being deleted; set false and apply before `tofu destroy`."
  type        = bool
  default     = true
}
