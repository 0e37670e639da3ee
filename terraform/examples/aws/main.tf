provider "aws" {
  region = var.region
}

module "aws" {
  source = "../../modules/aws"

  name                         = var.name
  gpu_node_group               = var.gpu_node_group
  redis_auth_token             = var.redis_auth_token
  redis_cluster_mode           = var.redis_cluster_mode
  postgres_deletion_protection = var.postgres_deletion_protection
}

# Both providers reach EKS with a short-lived token from the AWS CLI (no static credentials).
provider "kubernetes" {
  load_config_file       = false
  host                   = module.aws.cluster_endpoint
  cluster_ca_certificate = base64decode(module.aws.cluster_certificate_authority_data)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--region", var.region, "--cluster-name", module.aws.cluster_name]
  }
}

provider "helm" {
  kubernetes {
    host                   = module.aws.cluster_endpoint
    cluster_ca_certificate = base64decode(module.aws.cluster_certificate_authority_data)
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--region", var.region, "--cluster-name", module.aws.cluster_name]
    }
  }
}

module "platform" {
  source = "../../modules/platform"

  image_registry    = var.image_registry
  image_tag         = var.image_tag
  uplion_chart      = var.uplion_chart
  database_url      = module.aws.database_url
  redis_url         = module.aws.redis_url
  redis_cluster     = module.aws.redis_cluster_mode
  session_secret    = var.session_secret
  tls_certificate   = file(var.tls_certificate_file)
  tls_private_key   = file(var.tls_private_key_file)
  install_istio     = true
  istio_charts_path = var.istio_charts_path
  install_keda      = true
  install_pulsar    = true

  # the node groups and the EBS CSI driver (Pulsar's volumes) come first
  depends_on = [module.aws]
}
