// Package chart tests the Helm chart (manifests/helm/kubeshaper): helm
// lint, the chart rendered with its default values against the kustomize
// base (manifests/) object by object, the options, and the optional
// ValidatingAdmissionPolicy against a real kube-apiserver (tests/kubeenv)
// and pkg/rules' grammar. helm is built from the Go module proxy once and
// cached (tools/helmbin), kubectl comes from the Kubernetes cache
// (tools/k8sbin).
package chart

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

var (
	repo      = mustRepo()
	chartDir  = filepath.Join(repo, "manifests", "helm", "kubeshaper")
	helmOnce  sync.Once
	helmPath  string
	helmErr   error
	kubectlMu sync.Mutex
)

func mustRepo() string {
	r, err := kubeenv.RepoRoot()
	if err != nil {
		panic(err)
	}
	return r
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	helmOnce.Do(func() {
		out, err := exec.Command(filepath.Join(repo, "tools", "helmbin", "build.sh")).Output()
		helmPath, helmErr = strings.TrimSpace(string(out)), err
	})
	if helmErr != nil {
		t.Fatalf("building helm (tools/helmbin/build.sh): %v", helmErr)
	}
	cmd := exec.Command(helmPath, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	kubectlMu.Lock()
	defer kubectlMu.Unlock()
	bin, err := kubeenv.ComponentBinary(t.Context(), "kubectl", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// objects splits multi-document YAML into objects keyed Kind/namespace/name.
func objects(t *testing.T, s string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var o map[string]any
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatal(err)
		}
		if o == nil {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		key := fmt.Sprintf("%v/%v/%v", o["kind"], md["namespace"], md["name"])
		if _, dup := out[key]; dup {
			t.Fatalf("%s twice", key)
		}
		out[key] = o
	}
}

func keys(m map[string]map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestHelmLint(t *testing.T) {
	helm(t, "lint", "--strict", chartDir)
	helm(t, append([]string{"lint", "--strict", chartDir}, allOptions...)...)
}

// The chart with its default values is what `kubectl apply -k manifests/`
// applies, object by object and field by field, except the Namespace
// (helm install --create-namespace makes it).
func TestChartMatchesKustomize(t *testing.T) {
	chart := objects(t, helm(t, "template", "kubeshaper", chartDir, "--namespace", "kubeshaper-system"))
	kust := objects(t, kubectl(t, "kustomize", filepath.Join(repo, "manifests")))
	delete(kust, "Namespace/<nil>/kubeshaper-system")
	if !reflect.DeepEqual(keys(chart), keys(kust)) {
		t.Fatalf("objects differ:\nchart:     %v\nkustomize: %v", keys(chart), keys(kust))
	}
	for _, k := range keys(kust) {
		if !reflect.DeepEqual(chart[k], kust[k]) {
			a, _ := yaml.Marshal(chart[k])
			b, _ := yaml.Marshal(kust[k])
			t.Errorf("%s differs:\n--- chart\n%s\n--- kustomize\n%s", k, a, b)
		}
	}
	t.Logf("%d objects equal: %s", len(kust), strings.Join(keys(kust), ", "))
}

var allOptions = []string{
	"--set", "agent.namespaceSelector=kubeshaper.io/allowed=true",
	"--set", "agent.logFormat=json", "--set", "agent.logLevel=debug",
	"--set", "agent.resync=30s", "--set", "agent.workers=4",
	"--set", "agent.rateWindow=1m", "--set", "agent.rateSample=10s",
	"--set", "programs.configMap=kubeshaper-programs",
	"--set", "flowExport.mode=hostPath", "--set", "flowExport.idle=1m",
	"--set", "metrics.port=19990", "--set", "health.port=19991",
	"--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true",
	"--set", "grafanaDashboard.enabled=true", "--set", "admissionPolicy.enabled=true",
	"--set", "rbac.statusReaders[0].kind=Group", "--set", "rbac.statusReaders[0].name=ops",
	"--set", "rbac.statusReaders[0].apiGroup=rbac.authorization.k8s.io",
}

func TestChartOptions(t *testing.T) {
	objs := objects(t, helm(t, append([]string{"template", "kubeshaper", chartDir, "--namespace", "ks"}, allOptions...)...))
	for _, k := range []string{"Service/ks/kubeshaper-agent-metrics", "ServiceMonitor/ks/kubeshaper-agent", "PodMonitor/ks/kubeshaper-agent",
		"ConfigMap/ks/kubeshaper-grafana-dashboard", "ValidatingAdmissionPolicy/<nil>/kubeshaper-annotations",
		"ValidatingAdmissionPolicyBinding/<nil>/kubeshaper-annotations", "RoleBinding/ks/kubeshaper-status-reader"} {
		if objs[k] == nil {
			t.Errorf("%s not rendered (have %v)", k, keys(objs))
		}
	}
	ds := objs["DaemonSet/ks/kubeshaper-agent"]
	js, _ := json.Marshal(ds)
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Args  []string
						Ports []struct{ ContainerPort int }
					}
					Volumes []struct{ Name string }
				}
			}
		}
	}
	json.Unmarshal(js, &d)
	c := d.Spec.Template.Spec.Containers[0]
	want := []string{"--cleanup-on-exit=false", "--metrics-addr=:19990", "--health-addr=:19991", "--log-format=json", "--log-level=debug",
		"--namespace-selector=kubeshaper.io/allowed=true", "--resync=30s", "--workers=4", "--rate-window=1m", "--rate-sample=10s",
		"--program-dir=/etc/kubeshaper/programs", "--flow-export=/var/log/kubeshaper/flows.jsonl", "--flow-idle=1m"}
	if !reflect.DeepEqual(c.Args, want) {
		t.Errorf("args %q\nwant %q", c.Args, want)
	}
	if len(c.Ports) != 2 || c.Ports[0].ContainerPort != 19990 || c.Ports[1].ContainerPort != 19991 {
		t.Errorf("ports %+v", c.Ports)
	}
	if n := len(d.Spec.Template.Spec.Volumes); n != 5 {
		t.Errorf("%d volumes, want bpffs, netns, cgroup, programs, flows", n)
	}
	// The dashboard is manifests/grafana-dashboard.json, byte for byte
	// (the chart keeps a copy: helm reads files inside the chart only).
	orig, err := os.ReadFile(filepath.Join(repo, "manifests", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := objs["ConfigMap/ks/kubeshaper-grafana-dashboard"]["data"].(map[string]any)
	if data["kubeshaper.json"] != string(orig) {
		t.Errorf("the dashboard ConfigMap is not manifests/grafana-dashboard.json: run cp manifests/grafana-dashboard.json %s/files/", chartDir)
	}
}
