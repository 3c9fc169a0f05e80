package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeshaper/kubeshaper/pkg/nodestatus"
)

// agentSelector picks the agents' pods (the DaemonSet's selector, in the
// chart and in manifests/).
const agentSelector = "app.kubernetes.io/name=kubeshaper-agent"

// defaultStatusPort is the agent's --metrics-addr port when its pod
// names no "metrics" port.
const defaultStatusPort = 9990

// answer is one node's agent's reply, or why there is none.
type answer struct {
	Node     string           `json:"node"`
	AgentPod string           `json:"agent_pod,omitempty"`
	Status   *nodestatus.Node `json:"-"`
	Err      string           `json:"error,omitempty"`
	Seconds  float64          `json:"seconds"`
}

// gather asks the agents (of one node if node != "") for their /status
// through the API server's pod proxy, all at once, each within timeout.
// Nodes without a running agent and agents that did not answer come back
// with Err set: the caller lists them, nothing goes missing silently.
func gather(ctx context.Context, cs kubernetes.Interface, agentNS, node, namespace string, timeout time.Duration) ([]answer, error) {
	opts := metav1.ListOptions{LabelSelector: agentSelector}
	if node != "" {
		opts.FieldSelector = "spec.nodeName=" + node
	}
	agents, err := cs.CoreV1().Pods(agentNS).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("listing kubeshaper's agents in %s: %w", agentNS, err)
	}
	byNode := map[string]*corev1.Pod{}
	for i := range agents.Items {
		p := &agents.Items[i]
		if p.Spec.NodeName == "" {
			continue
		}
		// Two agents on a node (an update in progress): the running one.
		if old := byNode[p.Spec.NodeName]; old == nil || (old.Status.Phase != corev1.PodRunning && p.Status.Phase == corev1.PodRunning) {
			byNode[p.Spec.NodeName] = p
		}
	}
	var out []answer
	// Nodes with no agent at all are listed too (when the caller may list
	// nodes; a user without that right sees the agents' nodes only).
	if node == "" {
		if nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
			for _, n := range nodes.Items {
				if byNode[n.Name] == nil {
					out = append(out, answer{Node: n.Name, Err: "no kubeshaper agent pod on this node"})
				}
			}
		} else if !apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("listing nodes: %w", err)
		}
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for n, p := range byNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := ask(ctx, cs, p, namespace, timeout)
			a.Node = n
			mu.Lock()
			out = append(out, a)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

func ask(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, namespace string, timeout time.Duration) answer {
	a := answer{AgentPod: p.Name}
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		a.Err = fmt.Sprintf("agent pod %s is %s", p.Name, p.Status.Phase)
		return a
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req := cs.CoreV1().RESTClient().Get().Namespace(p.Namespace).Resource("pods").
		Name(fmt.Sprintf("%s:%d", p.Name, statusPort(p))).SubResource("proxy").Suffix(nodestatus.Path)
	if namespace != "" {
		req = req.Param("namespace", namespace)
	}
	raw, err := req.DoRaw(cctx)
	a.Seconds = time.Since(start).Seconds()
	if err != nil {
		if cctx.Err() != nil {
			a.Err = fmt.Sprintf("no answer within %s (agent pod %s)", timeout, p.Name)
		} else {
			a.Err = fmt.Sprintf("agent pod %s: %v", p.Name, err)
		}
		return a
	}
	var st nodestatus.Node
	if err := json.Unmarshal(raw, &st); err != nil {
		a.Err = fmt.Sprintf("agent pod %s answered something else than its status: %v", p.Name, err)
		return a
	}
	a.Status = &st
	return a
}

// statusPort is where the agent serves /status: its metrics port, or its
// health port when metrics are off.
func statusPort(p *corev1.Pod) int32 {
	for _, name := range []string{"metrics", "health"} {
		for _, c := range p.Spec.Containers {
			for _, port := range c.Ports {
				if port.Name == name {
					return port.ContainerPort
				}
			}
		}
	}
	return defaultStatusPort
}
