package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeFlags are the flags every cluster-facing command takes, as kubectl
// spells them.
type kubeFlags struct {
	kubeconfig, context, namespace, agentNS, as string
	allNamespaces                               bool
	timeout                                     time.Duration
}

func (k *kubeFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, ~/.kube/config)")
	fs.StringVar(&k.context, "context", "", "kubeconfig context")
	fs.StringVar(&k.as, "as", "", "user to impersonate, as kubectl --as")
	fs.StringVar(&k.namespace, "n", "", "namespace (default: the context's)")
	fs.StringVar(&k.namespace, "namespace", "", "namespace (default: the context's)")
	fs.StringVar(&k.agentNS, "agent-namespace", "kubeshaper-system", "namespace of kubeshaper's agents")
	fs.DurationVar(&k.timeout, "timeout", 3*time.Second, "how long each node's agent has to answer")
}

// client builds a clientset and resolves the default namespace.
func (k *kubeFlags) client() (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfig
	over := &clientcmd.ConfigOverrides{CurrentContext: k.context}
	over.AuthInfo.Impersonate = k.as
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, over)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-kubeshaper"
	// Every agent is asked at once: the default client-side limit (5 QPS)
	// would serialise a large cluster's answers.
	cfg.QPS, cfg.Burst = 200, 400
	ns := k.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", err
	}
	return cs, ns, nil
}

// parseInterleaved parses flags wherever they are among the positional
// arguments (kubectl's habit: `status web-1 -n shop`).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
