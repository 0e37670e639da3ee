locals {
  uplion_chart = var.uplion_chart != "" ? var.uplion_chart : abspath("${path.module}/../../../deploy/helm/uplion")
  edge_mode    = var.edge_mode != "" ? var.edge_mode : (var.install_istio ? "istio" : "envoy")

  # Istio's charts: from a local istio.io/istio source (manifests/charts) or from its repository.
  istio_local      = var.istio_charts_path != ""
  istio_repository = local.istio_local ? null : var.istio_chart_repository
  istio_version    = local.istio_local ? null : var.istio_version
  istio_charts = local.istio_local ? {
    base    = "${var.istio_charts_path}/base"
    istiod  = "${var.istio_charts_path}/istio-control/istio-discovery"
    gateway = "${var.istio_charts_path}/gateway"
    } : {
    base    = "base"
    istiod  = "istiod"
    gateway = "gateway"
  }

  pulsar_service_url = var.install_pulsar ? "pulsar://pulsar-broker.${var.pulsar_namespace}.svc:6650" : var.pulsar_service_url
  pulsar_admin_url   = var.install_pulsar ? "http://pulsar-broker.${var.pulsar_namespace}.svc:8080" : var.pulsar_admin_url

  # The Secrets the chart's `secrets` values name (deploy/helm/uplion/values.yaml): their names and
  # keys (not secret), and their values (sensitive). Only whether a Pulsar token is set is revealed.
  secrets = merge(
    {
      databaseURL   = { name = "uplion-database", key = "url" }
      redisURL      = { name = "uplion-redis", key = "url" }
      sessionSecret = { name = "uplion-session", key = "secret" }
    },
    nonsensitive(var.pulsar_token != "") ? { pulsarToken = { name = "uplion-pulsar", key = "token" } } : {},
  )
  secret_values = {
    databaseURL   = var.database_url
    redisURL      = var.redis_url
    sessionSecret = var.session_secret
    pulsarToken   = var.pulsar_token
  }

  uplion_values = yamlencode({
    image = { registry = var.image_registry, tag = var.image_tag }
    pulsar = {
      url      = local.pulsar_service_url
      adminURL = local.pulsar_admin_url
    }
    redis = { cluster = var.redis_cluster }
    secrets = merge(
      local.secrets,
      { create = false },
    )
    edge = {
      mode  = local.edge_mode
      envoy = { service = { type = var.edge_service_type } }
      istio = { ingressNamespace = var.istio_ingress_namespace }
    }
  })
}

resource "kubernetes_namespace" "uplion" {
  metadata {
    name   = var.namespace
    labels = local.edge_mode == "istio" ? { "istio-injection" = "enabled" } : {}
  }
}

resource "kubernetes_secret" "uplion" {
  for_each = local.secrets

  metadata {
    name      = each.value.name
    namespace = kubernetes_namespace.uplion.metadata[0].name
    labels    = { "app.kubernetes.io/part-of" = "uplion", "app.kubernetes.io/managed-by" = "opentofu" }
  }
  data = { (each.value.key) = local.secret_values[each.key] }
  type = "Opaque"
}

# --- Istio: base (CRDs), istiod, an ingress gateway ---

resource "kubernetes_namespace" "istio" {
  count = var.install_istio ? 1 : 0
  metadata {
    name = var.istio_namespace
  }
}

resource "kubernetes_namespace" "istio_ingress" {
  count = var.install_istio && var.istio_ingress_namespace != var.istio_namespace ? 1 : 0
  metadata {
    name = var.istio_ingress_namespace
  }
}

resource "helm_release" "istio_base" {
  count      = var.install_istio ? 1 : 0
  name       = "istio-base"
  namespace  = kubernetes_namespace.istio[0].metadata[0].name
  repository = local.istio_repository
  chart      = local.istio_charts.base
  version    = local.istio_version
  wait       = var.wait
  timeout    = var.helm_timeout
}

resource "helm_release" "istiod" {
  count      = var.install_istio ? 1 : 0
  name       = "istiod"
  namespace  = kubernetes_namespace.istio[0].metadata[0].name
  repository = local.istio_repository
  chart      = local.istio_charts.istiod
  version    = local.istio_version
  wait       = var.wait
  timeout    = var.helm_timeout
  # uplion's authz as the mesh's ext_authz provider the chart's AuthorizationPolicy names (the same
  # entry as istio/manifests/meshconfig-extension-providers.yaml, for this namespace).
  values = [yamlencode({
    meshConfig = {
      extensionProviders = [{
        name = "uplion-ext-authz"
        envoyExtAuthzGrpc = {
          service       = "uplion-authz.${var.namespace}.svc.cluster.local"
          port          = 9001
          timeout       = "0.5s"
          failOpen      = false
          statusOnError = "503"
        }
      }]
    }
  })]
  depends_on = [helm_release.istio_base]
}

resource "helm_release" "istio_ingress" {
  count      = var.install_istio ? 1 : 0
  name       = "istio-ingressgateway"
  namespace  = var.istio_ingress_namespace
  repository = local.istio_repository
  chart      = local.istio_charts.gateway
  version    = local.istio_version
  wait       = var.wait
  timeout    = var.helm_timeout
  # the pod label and ServiceAccount uplion's Gateway and mesh policies select
  values = [yamlencode({
    labels         = { istio = "ingressgateway" }
    serviceAccount = { name = "istio-ingressgateway-service-account" }
  })]
  depends_on = [helm_release.istiod, kubernetes_namespace.istio_ingress]
}

# The certificate the Gateway serves on 443 (credentialName uplion-tls, in the gateway's namespace).
resource "kubernetes_secret" "tls" {
  count = local.edge_mode == "istio" && nonsensitive(var.tls_certificate != "") ? 1 : 0

  metadata {
    name      = "uplion-tls"
    namespace = var.istio_ingress_namespace
    labels    = { "app.kubernetes.io/part-of" = "uplion", "app.kubernetes.io/managed-by" = "opentofu" }
  }
  data = {
    "tls.crt" = var.tls_certificate
    "tls.key" = var.tls_private_key
  }
  type       = "kubernetes.io/tls"
  depends_on = [kubernetes_namespace.istio_ingress, kubernetes_namespace.istio]
}

# --- KEDA ---

resource "kubernetes_namespace" "keda" {
  count = var.install_keda ? 1 : 0
  metadata {
    name = "keda"
  }
}

resource "helm_release" "keda" {
  count      = var.install_keda ? 1 : 0
  name       = "keda"
  namespace  = kubernetes_namespace.keda[0].metadata[0].name
  repository = var.keda_chart_repository
  chart      = "keda"
  version    = var.keda_version
  wait       = var.wait
  timeout    = var.helm_timeout
}

# --- Apache Pulsar (or an external one) ---

resource "kubernetes_namespace" "pulsar" {
  count = var.install_pulsar ? 1 : 0
  metadata {
    name = var.pulsar_namespace
  }
}

resource "helm_release" "pulsar" {
  count      = var.install_pulsar ? 1 : 0
  name       = "pulsar"
  namespace  = kubernetes_namespace.pulsar[0].metadata[0].name
  repository = var.pulsar_chart_repository
  chart      = "pulsar"
  version    = var.pulsar_version
  wait       = var.wait
  timeout    = var.helm_timeout
  values = concat([yamlencode({
    namespace       = var.pulsar_namespace
    namespaceCreate = false
    components      = { pulsar_manager = false }
  })], var.pulsar_values)
}

# --- uplion ---

resource "helm_release" "uplion" {
  name       = var.release_name
  namespace  = kubernetes_namespace.uplion.metadata[0].name
  repository = var.uplion_chart_repository
  chart      = local.uplion_chart
  wait       = var.wait
  timeout    = var.helm_timeout
  values     = concat([local.uplion_values], var.uplion_values)

  lifecycle {
    precondition {
      condition     = local.pulsar_service_url != "" && local.pulsar_admin_url != ""
      error_message = "Set install_pulsar = true, or pulsar_service_url and pulsar_admin_url of an existing Pulsar."
    }
  }

  depends_on = [
    kubernetes_secret.uplion,
    kubernetes_secret.tls,
    helm_release.istio_ingress,
    helm_release.keda,
    helm_release.pulsar,
  ]
}

# The edge's Service, read back for its load balancer address (api_url).
data "kubernetes_service" "edge" {
  metadata {
    name      = local.edge_mode == "istio" ? "istio-ingressgateway" : "uplion-edge"
    namespace = local.edge_mode == "istio" ? var.istio_ingress_namespace : var.namespace
  }
  depends_on = [helm_release.uplion, helm_release.istio_ingress]
}
