"""uplion edge: the Envoy filter chain in front of the gateway, generated once for local Envoy and Istio."""
