output "namespace" {
  description = "Namespace of the uplion release."
  value       = kubernetes_namespace.uplion.metadata[0].name
}

output "release" {
  description = "Helm release name and chart version of uplion."
  value       = { name = helm_release.uplion.name, version = helm_release.uplion.version }
}

output "secret_names" {
  description = "The Kubernetes Secrets this module created (the chart reads them)."
  value       = sort([for s in kubernetes_secret.uplion : s.metadata[0].name])
}

output "edge_service" {
  description = "Namespace/name of the Service that exposes the OpenAI-compatible API."
  value       = "${data.kubernetes_service.edge.metadata[0].namespace}/${data.kubernetes_service.edge.metadata[0].name}"
}

output "api_url" {
  description = "Base URL of the OpenAI-compatible API: https://<host> (Istio) or http://<host>:8080 (Envoy); empty until the load balancer has an address."
  value = try(
    format(local.edge_mode == "istio" ? "https://%s" : "http://%s:8080",
    coalesce(data.kubernetes_service.edge.load_balancer_ingress[0].hostname, data.kubernetes_service.edge.load_balancer_ingress[0].ip)),
    "",
  )
}

output "pulsar" {
  description = "Service and admin URLs of the Pulsar uplion uses."
  value       = { service_url = local.pulsar_service_url, admin_url = local.pulsar_admin_url }
}
