package chart

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

func podWith(name string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
}

// tryPod creates a pod with server-side dry run (admission runs, nothing
// is stored) and returns the API's error.
func tryPod(cs kubernetes.Interface, ann map[string]string) error {
	_, err := cs.CoreV1().Pods("default").Create(context.Background(), podWith("probe", ann), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// The chart's ValidatingAdmissionPolicy in a real kube-apiserver: it
// refuses what it claims to check, with its message; it never refuses a
// value pkg/rules accepts (pkg/rules' fuzz corpus and the grammar's
// examples); it reads workloads' pod templates; an update that leaves the
// annotations alone passes even on an object admitted before the policy.
func TestAdmissionPolicy(t *testing.T) {
	env := kubeenv.Start(t)
	cs := env.Clientset()
	ctx := context.Background()
	// Admitted before the policy exists: must stay updatable.
	if _, err := cs.CoreV1().Pods("default").Create(ctx, podWith("old", map[string]string{"kubeshaper.io/bandwidth": "50mbit"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vap := helm(t, "template", "kubeshaper", chartDir, "--set", "admissionPolicy.enabled=true", "--show-only", "templates/admission-policy.yaml")
	f := filepath.Join(t.TempDir(), "vap.yaml")
	os.WriteFile(f, []byte(vap), 0o644)
	kubectl(t, "--kubeconfig", env.KubeconfigPath(), "apply", "-f", f)
	deadline := time.Now().Add(30 * time.Second)
	for tryPod(cs, map[string]string{"kubeshaper.io/bandwidth": "50mbit"}) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the policy refuses nothing 30 s after it was applied")
		}
		time.Sleep(200 * time.Millisecond)
	}

	for _, c := range []struct {
		ann  map[string]string
		want string
	}{
		{map[string]string{"kubeshaper.io/bandwidth": "50mbit"}, "kubeshaper.io/bandwidth: every clause (between \";\") names its direction"},
		{map[string]string{"kubeshaper.io/loss": "uniform egress 1%; 2%"}, "invalid annotation kubeshaper.io/loss: every clause"},
		{map[string]string{"kubeshaper.io/bandwidth": "fast egress"}, `invalid annotation kubeshaper.io/bandwidth="fast egress": every clause needs a RATE`},
		{map[string]string{"kubeshaper.io/bandwidth": "50 furlongs egress"}, "every clause needs a RATE"},
		{map[string]string{"kubeshaper.io/bandwith": "50mbit egress"}, "unknown kubeshaper annotation kubeshaper.io/bandwith: kubeshaper reads kubeshaper.io/bandwidth"},
		{map[string]string{"kubeshaper.io/until": "yesterday"}, `invalid annotation kubeshaper.io/until="yesterday": want an RFC 3339 time`},
		{map[string]string{"kubeshaper.io/delay": strings.Repeat("1", 4097) + "ms egress"}, "longer than 4096 characters"},
	} {
		err := tryPod(cs, c.ann)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want refused with %q", c.ann, err, c.want)
		}
		for k, v := range c.ann {
			if _, perr := rules.ParseValue(k, v); perr == nil {
				t.Errorf("%s=%q: refused at admission but pkg/rules accepts it", k, v)
			}
		}
	}

	// Never refuses what the agent accepts.
	corpus := grammarExamples(t)
	accepted := 0
	for _, kv := range corpus {
		if _, err := rules.ParseValue(kv[0], kv[1]); err != nil {
			continue
		}
		accepted++
		if err := tryPod(cs, map[string]string{kv[0]: kv[1]}); err != nil {
			t.Errorf("%s=%q: pkg/rules accepts it, the policy refused it: %v", kv[0], kv[1], err)
		}
	}
	t.Logf("%d values pkg/rules accepts (of %d tried) all admitted", accepted, len(corpus))
	if accepted < 30 {
		t.Errorf("only %d accepted values in the corpus", accepted)
	}

	// Workloads: the pod template is checked.
	one := int32(1)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{Replicas: &one,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{"kubeshaper.io/delay": "20ms"}}, Spec: podWith("", nil).Spec}}}
	_, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil || !strings.Contains(err.Error(), "kubeshaper.io/delay: every clause") {
		t.Errorf("Deployment with a template's delay lacking a direction: %v", err)
	}
	dep.Spec.Template.Annotations["kubeshaper.io/delay"] = "20ms egress"
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("valid Deployment refused: %v", err)
	}

	// The pod admitted before: a label change passes, a still-invalid new
	// value does not.
	if _, err := cs.CoreV1().Pods("default").Patch(ctx, "old", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("label change on a pod admitted before the policy: %v", err)
	}
	_, err = cs.CoreV1().Pods("default").Patch(ctx, "old", types.MergePatchType, []byte(`{"metadata":{"annotations":{"kubeshaper.io/bandwidth":"60mbit"}}}`), metav1.PatchOptions{})
	if err == nil || !strings.Contains(err.Error(), "names its direction") {
		t.Errorf("changing it to another invalid value: %v, want refused", err)
	}
}

// grammarExamples are (key, value) pairs: every value of pkg/rules'
// FuzzParseValue corpus under every key pkg/rules reads (the corpus' key
// byte indexes a list whose order may change), and the examples of the
// grammar's documentation.
func grammarExamples(t *testing.T) [][2]string {
	t.Helper()
	keys := rules.AnnotationKeys()
	dir := filepath.Join(repo, "pkg", "rules", "testdata", "fuzz", "FuzzParseValue")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 3 {
			continue
		}
		v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "string("), ")"))
		if err != nil || !utf8.ValidString(v) {
			continue
		}
		for _, k := range keys {
			out = append(out, [2]string{k, v})
		}
	}
	for _, kv := range [][2]string{
		{"kubeshaper.io/bandwidth", "10mbps egress; 1gbit ingress burst=64kb; 5 mbps both mode=pace"},
		{"kubeshaper.io/bandwidth", "egress 10mbps"}, {"kubeshaper.io/bandwidth", "10. mbit EGRESS"},
		{"kubeshaper.io/bandwidth", "1.5e3kbit ingress to=10.0.0.0/8 port=80,443 proto=tcp"},
		{"kubeshaper.io/bandwidth", "50mbps egress; 200mbit ingress"},
		{"kubeshaper.io/loss", "uniform egress 2%; exponential ingress 300"}, {"kubeshaper.io/loss", "egress uniform 0.05"},
		{"kubeshaper.io/loss", "gilbert egress p=1% r=25% h=0% k=100%"},
		{"kubeshaper.io/duplicate", "egress 1%"}, {"kubeshaper.io/corrupt", "ingress 0.1%"},
		{"kubeshaper.io/delay", "50ms egress"}, {"kubeshaper.io/delay", "80ms jitter=10ms ingress"},
		{"kubeshaper.io/delay", "1.5ms both to=svc:db"},
		{"kubeshaper.io/program", "dropper egress DROP=1 PORT=80"}, {"kubeshaper.io/program", "dscp egress DSCP=46"},
		{"kubernetes.io/egress-bandwidth", "10M"}, {"kubernetes.io/ingress-bandwidth", "1G"},
	} {
		out = append(out, kv)
	}
	return out
}
