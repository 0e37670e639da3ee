variable "namespace" {
  description = "Namespace of the uplion release (created by this module)."
  type        = string
  default     = "uplion"
}

variable "release_name" {
  description = "Helm release name of the uplion chart."
  type        = string
  default     = "uplion"
}

variable "uplion_chart" {
  description = "Path (or repository chart name) of the uplion chart. Empty: deploy/helm/uplion of this checkout."
  type        = string
  default     = ""
}

variable "uplion_chart_repository" {
  description = "Helm repository of the uplion chart; null when uplion_chart is a local path."
  type        = string
  default     = null
}

variable "image_registry" {
  description = "Registry holding uplion/<platform|edge|worker|worker-local|ratelimit> images."
  type        = string
  default     = "ghcr.io"
}

variable "image_tag" {
  description = "Tag of the uplion images."
  type        = string
  default     = "0.1.0"
}

variable "uplion_values" {
  description = "Extra values files (YAML strings) for the uplion chart, applied after this module's own."
  type        = list(string)
  default     = []
}

variable "edge_mode" {
  description = "istio or envoy (the chart's edge.mode). Empty: istio when install_istio, else envoy."
  type        = string
  default     = ""
  validation {
    condition     = contains(["", "istio", "envoy"], var.edge_mode)
    error_message = "edge_mode must be \"\", \"istio\" or \"envoy\"."
  }
}

variable "edge_service_type" {
  description = "Service type of the plain Envoy edge (edge_mode envoy): ClusterIP or LoadBalancer."
  type        = string
  default     = "LoadBalancer"
}

variable "wait" {
  description = "Wait for the releases' pods to become ready (false on clusters that cannot run pods yet)."
  type        = bool
  default     = true
}

variable "helm_timeout" {
  description = "Seconds each Helm release may take."
  type        = number
  default     = 900
}

# --- Secrets (created as Kubernetes Secrets; never passed to Helm as values) ---

variable "database_url" {
  description = "PostgreSQL URL of the accounts/billing database (postgresql://user:password@host:5432/db)."
  type        = string
  sensitive   = true
}

variable "redis_url" {
  description = "Redis URL (redis:// or rediss://) for quotas, the authz cache and the rate limiter."
  type        = string
  sensitive   = true
}

variable "redis_cluster" {
  description = "redis_url names a Redis Cluster (e.g. ElastiCache cluster mode's configuration endpoint): every service connects in cluster mode."
  type        = bool
  default     = false
}

variable "session_secret" {
  description = "Secret (32+ characters) that signs admin session tokens."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.session_secret) >= 32
    error_message = "session_secret must be at least 32 characters."
  }
}

variable "pulsar_token" {
  description = "Optional Pulsar JWT for the services; empty: none."
  type        = string
  sensitive   = true
  default     = ""
}

# --- Istio ---

variable "tls_certificate" {
  description = "PEM certificate (chain) the Istio Gateway serves on 443, as Secret uplion-tls in istio_ingress_namespace. Empty: create that Secret yourself."
  type        = string
  sensitive   = true
  default     = ""
}

variable "tls_private_key" {
  description = "PEM private key of tls_certificate."
  type        = string
  sensitive   = true
  default     = ""
}

variable "install_istio" {
  description = "Install Istio (base, istiod, an ingress gateway). False when the cluster already has Istio."
  type        = bool
  default     = true
}

variable "istio_charts_path" {
  description = "Local folder of Istio's charts (manifests/charts of an istio.io/istio source). Empty: use istio_chart_repository."
  type        = string
  default     = ""
}

variable "istio_chart_repository" {
  description = "Helm repository of Istio's charts (base, istiod, gateway)."
  type        = string
  default     = "https://istio-release.storage.googleapis.com/charts"
}

variable "istio_version" {
  description = "Version of Istio's charts from istio_chart_repository."
  type        = string
  default     = "1.28.0"
}

variable "istio_namespace" {
  description = "Namespace of istiod."
  type        = string
  default     = "istio-system"
}

variable "istio_ingress_namespace" {
  description = "Namespace of the Istio ingress gateway (uplion's EnvoyFilter and AuthorizationPolicy go there)."
  type        = string
  default     = "istio-ingress"
}

# --- KEDA ---

variable "install_keda" {
  description = "Install KEDA (the operator's worker autoscaling). False when the cluster already has it."
  type        = bool
  default     = true
}

variable "keda_chart_repository" {
  description = "Helm repository of the KEDA chart."
  type        = string
  default     = "https://kedacore.github.io/charts"
}

variable "keda_version" {
  description = "Version of the KEDA chart."
  type        = string
  default     = "2.18.1"
}

# --- Apache Pulsar ---

variable "install_pulsar" {
  description = "Install Apache Pulsar from its official chart. False: use pulsar_service_url/pulsar_admin_url."
  type        = bool
  default     = false
}

variable "pulsar_chart_repository" {
  description = "Helm repository of Apache Pulsar's chart."
  type        = string
  default     = "https://pulsar.apache.org/charts"
}

variable "pulsar_version" {
  description = "Version of Apache Pulsar's chart."
  type        = string
  default     = "4.1.0"
}

variable "pulsar_namespace" {
  description = "Namespace of the in-cluster Pulsar (install_pulsar)."
  type        = string
  default     = "pulsar"
}

variable "pulsar_values" {
  description = "Extra values files (YAML strings) for Pulsar's chart."
  type        = list(string)
  default     = []
}

variable "pulsar_service_url" {
  description = "Service URL of an external Pulsar (pulsar://host:6650 or pulsar+ssl://...). Required unless install_pulsar."
  type        = string
  default     = ""
}

variable "pulsar_admin_url" {
  description = "Admin (web) URL of an external Pulsar (http://host:8080). Required unless install_pulsar."
  type        = string
  default     = ""
}
