package reliability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

// The agent's identity in manifests/rbac.yaml.
const (
	agentNS = "kubeshaper-system"
	agentSA = "kubeshaper-agent"
)

// TestLeastPrivilege runs the agent as the ServiceAccount of manifests/
// (namespace.yaml + rbac.yaml applied as they are, a bound token from the
// TokenRequest API) with --namespace-selector, and shows that
//   - the manifests' DaemonSet is not privileged: explicit capabilities,
//     everything else dropped, read-only root filesystem;
//   - the ClusterRole grants what the agent uses and nothing to write but
//     Events (SubjectAccessReviews of what it must and must not do), and the
//     agent works under it (rules applied, Events posted, no "forbidden");
//   - a pod in a namespace the selector leaves out is left alone even when
//     annotated: no filter, no map entry, no Event; labelling its
//     namespace shapes it, unlabelling a namespace releases its pods.
func TestLeastPrivilege(t *testing.T) {
	root, err := kubeenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	manifests := filepath.Join(root, "manifests")
	if _, err := os.Stat(filepath.Join(manifests, "rbac.yaml")); err != nil {
		t.Skipf("no manifests/rbac.yaml yet: %v", err)
	}
	t.Run("daemonset is not privileged", func(t *testing.T) { checkDaemonSet(t, filepath.Join(manifests, "daemonset.yaml")) })

	w := agentenv.New(t, "rp")
	ctx := context.Background()
	for _, f := range []string{"namespace.yaml", "rbac.yaml"} {
		applyManifest(t, w, filepath.Join(manifests, f))
	}
	allowed, denied := checkAccess(t, w)

	const label = "kubeshaper.io/shape"
	setNamespaceLabel(t, w, w.NS, label, "true")
	if _, err := w.Env.CreateNamespace(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	a, o := w.AddPod("a"), w.AddPod("o")
	bw := map[string]string{"kubeshaper.io/bandwidth": "10mbit egress"}
	w.Pod(a, "pa", nil, bw)
	// Invalid and hostNetwork: would each be worth an Event if selected.
	w.PodIn("other", o, "po", nil, map[string]string{"kubeshaper.io/bandwidth": "10mbit egress", "kubeshaper.io/loss": "sometimes"})
	zero := int64(0)
	if _, err := w.CS.CoreV1().Pods("other").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ph", Annotations: bw},
		Spec: corev1.PodSpec{NodeName: agentenv.NodeName, HostNetwork: true, TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{Name: "c", Image: "none"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ag := w.StartAgent(agentenv.Options{
		Kubeconfig: serviceAccountKubeconfig(t, w),
		Args:       []string{"--namespace-selector", label + "=true"},
	})
	w.WaitRate(a, rules.Egress, 10e6)
	w.Eventually(10*time.Second, "Applied event on pa, posted as the ServiceAccount", func() (bool, string) {
		return len(w.Events("pa", "Applied")) > 0, ""
	})
	// Two full resyncs (--resync 3s) later, po and ph are still untouched.
	time.Sleep(7 * time.Second)
	oIdx := w.Ifindex(o)
	leftAlone := func() string {
		var bad []string
		if n := w.Filters(o); n != 0 {
			bad = append(bad, fmt.Sprintf("%d filters on po's veth", n))
		}
		for _, d := range rules.Directions {
			if _, ok := w.RuleAt(oIdx, d); ok {
				bad = append(bad, "a map entry for po "+d.String())
			}
		}
		for _, name := range []string{"po", "ph"} {
			for _, e := range w.EventsIn("other", name, "") {
				bad = append(bad, fmt.Sprintf("Event %s on %s: %s", e.Reason, name, e.Message))
			}
		}
		return strings.Join(bad, "; ")
	}
	if bad := leftAlone(); bad != "" {
		t.Fatalf("a pod of a namespace outside --namespace-selector was touched: %s", bad)
	}

	// Selecting the namespace shapes its pods; unselecting releases them.
	t0 := time.Now() // from the patch: the agent may be done before it returns
	setNamespaceLabel(t, w, "other", label, "true")
	_, err = agentenv.Poll(30*time.Second, 20*time.Millisecond, func() (bool, string) {
		c, ok := w.RuleAt(oIdx, rules.Egress)
		return ok && c.RateBits() == 10e6, c.String()
	})
	selectTook := time.Since(t0)
	if err != nil {
		t.Fatalf("po not shaped after its namespace was selected: %v", err)
	}
	w.Eventually(10*time.Second, "InvalidAnnotation event on po once selected", func() (bool, string) {
		return len(w.EventsIn("other", "po", "InvalidAnnotation")) > 0, ""
	})
	aIdx := w.Ifindex(a)
	t0 = time.Now()
	setNamespaceLabel(t, w, w.NS, label, "")
	_, err = agentenv.Poll(30*time.Second, 20*time.Millisecond, func() (bool, string) {
		_, ok1 := w.RuleAt(aIdx, rules.Egress)
		_, ok2 := w.RuleAt(aIdx, rules.Ingress)
		return !ok1 && !ok2 && w.Filters(a) == 0, ""
	})
	releaseTook := time.Since(t0)
	if err != nil {
		t.Fatalf("pa not released after its namespace was unselected: %v", err)
	}
	if n := ag.CountLog("forbidden"); n != 0 {
		t.Errorf("the agent logged %d 'forbidden' errors under the manifests' RBAC:\n%s", n, agentenv.Tail(ag.Log(), 20))
	}
	t.Logf("least privilege: RBAC of manifests/ allows %d/%d needed requests and denies %d/%d others; a pod outside --namespace-selector got 0 filters, 0 entries, 0 Events; labelling its namespace shaped it %v after the patch was sent, unlabelling released a pod after %v",
		allowed, len(mustAllow), denied, len(mustDeny), selectTook.Round(time.Millisecond), releaseTook.Round(time.Millisecond))
	record(t, "least_privilege", map[string]any{
		"rbac_allowed": allowed, "rbac_denied": denied, "select_to_shaped_s": secs(selectTook), "unselect_to_released_s": secs(releaseTook),
	})
	if selectTook > bound(5*time.Second) || releaseTook > bound(5*time.Second) {
		t.Errorf("namespace label changes took %v / %v to act: want within %v", selectTook, releaseTook, bound(5*time.Second))
	}
}

// checkDaemonSet reads the manifests' DaemonSet: no privileged container,
// capabilities dropped to an explicit list, read-only root filesystem.
func checkDaemonSet(t *testing.T, path string) {
	var ds *appsv1.DaemonSet
	for _, obj := range decodeManifest(t, path) {
		if d, ok := obj.(*appsv1.DaemonSet); ok {
			ds = d
		}
	}
	if ds == nil {
		t.Fatalf("no DaemonSet in %s", path)
	}
	if ds.Spec.Template.Spec.ServiceAccountName != agentSA {
		t.Errorf("the DaemonSet runs as ServiceAccount %q, want %q (rbac.yaml's)", ds.Spec.Template.Spec.ServiceAccountName, agentSA)
	}
	// What the agent needs and why is documented in the manifest itself.
	mayAdd := []corev1.Capability{"BPF", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "PERFMON"}
	for _, c := range append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: root filesystem is writable", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s does not drop ALL capabilities", c.Name)
			continue
		}
		for _, add := range sc.Capabilities.Add {
			if !slices.Contains(mayAdd, add) {
				t.Errorf("container %s adds capability %s, beyond %v", c.Name, add, mayAdd)
			}
		}
		t.Logf("container %s: privileged=false, readOnlyRootFilesystem=true, capabilities drop ALL add %v", c.Name, sc.Capabilities.Add)
	}
}

func decodeManifest(t *testing.T, path string) []runtime.Object {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []runtime.Object
	for {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatalf("%s: %v", path, err)
		}
		if len(raw.Raw) == 0 || strings.TrimSpace(string(raw.Raw)) == "null" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, obj)
	}
}

// applyManifest creates the objects of a manifest file (the kinds
// namespace.yaml and rbac.yaml hold).
func applyManifest(t *testing.T, w *agentenv.World, path string) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range decodeManifest(t, path) {
		var err error
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = w.CS.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = w.CS.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = w.CS.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = w.CS.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = w.CS.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = w.CS.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: unexpected %T", path, obj)
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
}

type access struct{ verb, group, resource, sub string }

func (a access) String() string {
	r := a.resource
	if a.sub != "" {
		r += "/" + a.sub
	}
	if a.group != "" {
		r += "." + a.group
	}
	return a.verb + " " + r
}

// What the agent does (informers, Events) and what it must not be able to.
var (
	mustAllow = []access{
		{"list", "", "pods", ""}, {"watch", "", "pods", ""}, {"get", "", "pods", ""},
		{"list", "", "services", ""}, {"watch", "", "services", ""},
		{"list", "", "namespaces", ""}, {"watch", "", "namespaces", ""},
		{"list", "discovery.k8s.io", "endpointslices", ""},
		{"create", "", "events", ""}, {"patch", "", "events", ""},
		{"get", "", "nodes", ""}, // its Node's allocatable pods size the maps
	}
	mustDeny = []access{
		{"create", "", "pods", ""}, {"update", "", "pods", ""}, {"patch", "", "pods", ""}, {"delete", "", "pods", ""},
		{"update", "", "pods", "status"}, {"create", "", "pods", "exec"}, {"create", "", "pods", "eviction"},
		{"get", "", "secrets", ""}, {"list", "", "secrets", ""}, {"get", "", "configmaps", ""},
		{"update", "", "services", ""}, {"update", "", "namespaces", ""}, {"delete", "", "namespaces", ""},
		{"list", "", "nodes", ""}, {"patch", "", "nodes", ""},
		{"create", "", "serviceaccounts", "token"}, {"delete", "", "events", ""},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", ""}, {"escalate", "rbac.authorization.k8s.io", "clusterroles", ""},
		{"impersonate", "", "users", ""}, {"create", "apps", "daemonsets", ""},
	}
)

// checkAccess asks the apiserver's authorizer, as the agent's
// ServiceAccount, about every request in mustAllow and mustDeny.
func checkAccess(t *testing.T, w *agentenv.World) (allowed, denied int) {
	t.Helper()
	user := "system:serviceaccount:" + agentNS + ":" + agentSA
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + agentNS, "system:authenticated"}
	ask := func(a access) bool {
		r, err := w.CS.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authzv1.SubjectAccessReview{
			Spec: authzv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: "shaped", Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status.Allowed
	}
	for _, a := range mustAllow {
		if ask(a) {
			allowed++
		} else {
			t.Errorf("manifests/rbac.yaml does not let the agent %s", a)
		}
	}
	for _, a := range mustDeny {
		if !ask(a) {
			denied++
		} else {
			t.Errorf("manifests/rbac.yaml lets the agent %s", a)
		}
	}
	return allowed, denied
}

// serviceAccountKubeconfig writes a kubeconfig holding a bound token of
// the agent's ServiceAccount (TokenRequest API), as a pod would mount it.
func serviceAccountKubeconfig(t *testing.T, w *agentenv.World) string {
	t.Helper()
	exp := int64(3600)
	tr, err := w.CS.CoreV1().ServiceAccounts(agentNS).CreateToken(context.Background(), agentSA,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubeenv"] = &clientcmdapi.Cluster{Server: w.Env.Host(), CertificateAuthorityData: w.Env.CAPEM()}
	cfg.AuthInfos["agent"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["agent"] = &clientcmdapi.Context{Cluster: "kubeenv", AuthInfo: "agent"}
	cfg.CurrentContext = "agent"
	path := filepath.Join(t.TempDir(), "agent.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// setNamespaceLabel sets (or, with an empty value, removes) a label.
func setNamespaceLabel(t *testing.T, w *agentenv.World, ns, key, value string) {
	t.Helper()
	v := fmt.Sprintf("%q", value)
	if value == "" {
		v = "null"
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)
	if _, err := w.CS.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
