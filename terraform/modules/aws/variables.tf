variable "name" {
  description = "Name prefix of every resource (the EKS cluster's name)."
  type        = string
  default     = "uplion"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# --- Network ---

variable "vpc_cidr" {
  description = "CIDR of the VPC; public and private /20 subnets are cut from it, one of each per zone."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Zones to use (2 or 3). Empty: the region's first three."
  type        = list(string)
  default     = []
}

# --- EKS ---

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.34"
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the EKS API endpoint publicly."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (services, Pulsar, CPU workers)."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "cpu_nodes" {
  description = "Size of the CPU node group: min, desired, max."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 3, desired = 3, max = 6 }
}

variable "gpu_node_group" {
  description = "Create a GPU node group (tainted nvidia.com/gpu=true:NoSchedule, labelled uplion.io/accelerator=nvidia)."
  type        = bool
  default     = false
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_nodes" {
  description = "Size of the GPU node group: min, desired, max."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 1, max = 2 }
}

# --- PostgreSQL (RDS) ---

variable "postgres_version" {
  description = "RDS PostgreSQL engine version."
  type        = string
  default     = "17"
}

variable "postgres_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "postgres_storage_gb" {
  description = "Allocated storage (GiB); autoscaling up to four times this."
  type        = number
  default     = 50
}

variable "postgres_multi_az" {
  description = "Run RDS Multi-AZ."
  type        = bool
  default     = true
}

variable "postgres_deletion_protection" {
  description = "Refuse to delete the database (set false before `tofu destroy`)."
  type        = bool
  default     = true
}

variable "database_name" {
  description = "Database uplion uses."
  type        = string
  default     = "uplion"
}

variable "database_user" {
  description = "Master user of the database (its password is generated and kept in AWS Secrets Manager by RDS)."
  type        = string
  default     = "uplion"
}

# --- Redis (ElastiCache) ---

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.medium"
}

variable "redis_engine_version" {
  description = "ElastiCache Redis OSS engine version."
  type        = string
  default     = "7.1"
}

variable "redis_cluster_mode" {
  description = "Redis cluster mode (sharded; uplion's services then connect in cluster mode: pass the redis_cluster_mode output to the platform module's redis_cluster)."
  type        = bool
  default     = false
}

variable "redis_shards" {
  description = "Shards when redis_cluster_mode is on."
  type        = number
  default     = 2
}

variable "redis_replicas" {
  description = "Replicas per shard (or of the primary without cluster mode)."
  type        = number
  default     = 1
}

variable "redis_auth_token" {
  description = "AUTH token of Redis (16-128 printable characters, no @, \", /). Transit encryption is always on."
  type        = string
  sensitive   = true
}
