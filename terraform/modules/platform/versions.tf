terraform {
  required_version = ">= 1.6.0"

  # Tested with kubernetes 1.13.4 and helm 1.3.2 (terraform/README.md says why these). The module
  # uses only helm_release arguments helm 2.x keeps; Istio's, KEDA's and Pulsar's current charts need
  # helm >= 2.x (a Helm 3.5+ library: `dig`), so roots that install them pin it (examples/aws).
  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 1.13.4, < 2.0.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 1.3.2, < 3.0.0"
    }
  }
}
