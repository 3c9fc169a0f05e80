package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
)

// Client is the agent's whole access to the API server: core/v1 (pods,
// Services, namespaces, the Node, Events) and discovery.k8s.io/v1
// (EndpointSlices), each over a plain REST client, with a scheme that
// holds those two groups only.
//
// Why not client-go's clientset: kubernetes.NewForConfig, its typed
// clients and kubernetes/scheme import and register every API group
// (57 k8s.io/api packages). Their code and init-time registrations are
// the largest part of the agent's resident binary pages, ~8 MB of RSS
// for groups the agent never reads (README, "Memory on a node").
// TestAgentImportsNoClientset (cmd/kubeshaper-agent) keeps them out.
type Client struct {
	// Scheme knows core/v1, discovery/v1 and the meta types of both; the
	// event recorder needs it to name the objects Events are about.
	Scheme *runtime.Scheme
	core   *rest.RESTClient
	disco  *rest.RESTClient
}

// NewScheme returns a scheme with the API groups the agent uses.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("kube: building the API scheme: %w", err)
		}
	}
	// Status, WatchEvent and the list options, as client-go's own scheme
	// registers them (an error answer is a v1 Status).
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s, nil
}

// NewClient builds the core/v1 and discovery/v1 clients on cfg; they share
// one HTTP client (one connection pool), as a clientset's clients do.
func NewClient(cfg *rest.Config) (*Client, error) {
	s, err := NewScheme()
	if err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kube: the API server's HTTP client: %w", err)
	}
	codecs := serializer.NewCodecFactory(s).WithoutConversion()
	restFor := func(apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
		gc := rest.CopyConfig(c)
		gc.APIPath, gc.GroupVersion, gc.NegotiatedSerializer = apiPath, &gv, codecs
		rc, err := rest.RESTClientForConfigAndClient(gc, hc)
		if err != nil {
			return nil, fmt.Errorf("kube: the %s client: %w", gv, err)
		}
		return rc, nil
	}
	core, err := restFor("/api", corev1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	disco, err := restFor("/apis", discoveryv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	return &Client{Scheme: s, core: core, disco: disco}, nil
}

// Node reads the Node object name.
func (c *Client) Node(ctx context.Context, name string) (*corev1.Node, error) {
	n := &corev1.Node{}
	if err := c.core.Get().Resource("nodes").Name(name).Do(ctx).Into(n); err != nil {
		return nil, fmt.Errorf("kube: reading Node %q: %w", name, err)
	}
	return n, nil
}

// Ready asks the API server's /readyz.
func (c *Client) Ready(ctx context.Context) error {
	if _, err := c.core.Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return fmt.Errorf("kube: the API server's /readyz: %w", err)
	}
	return nil
}

// EventSink posts an event recorder's Events through the core/v1 client.
func (c *Client) EventSink() record.EventSink { return eventSink{c.core} }

// eventTimeout bounds one Event write: record.EventSink has no context, and
// the broadcaster retries a failed write on its own (12 tries, 10 s apart).
const eventTimeout = 30 * time.Second

// eventSink writes Events to their own namespace (the involved object's),
// as client-go's EventSinkImpl over Events("") does. Its errors go back
// unwrapped: the broadcaster decides by their concrete type (*StatusError:
// drop the Event; a transport error: retry; NotFound on a patch: create).
type eventSink struct{ core *rest.RESTClient }

func (s eventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	return s.write(s.core.Post().NamespaceIfScoped(e.Namespace, e.Namespace != "").Resource("events").Body(e))
}

func (s eventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	return s.write(s.core.Put().NamespaceIfScoped(e.Namespace, e.Namespace != "").Resource("events").Name(e.Name).Body(e))
}

func (s eventSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	return s.write(s.core.Patch(types.StrategicMergePatchType).NamespaceIfScoped(e.Namespace, e.Namespace != "").
		Resource("events").Name(e.Name).Body(data))
}

func (eventSink) write(req *rest.Request) (*corev1.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	out := &corev1.Event{}
	if err := req.Do(ctx).Into(out); err != nil {
		return nil, err
	}
	return out, nil
}
