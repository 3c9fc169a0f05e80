package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// problem is one lint finding: file:object:key: message.
type problem struct{ file, object, key, msg string }

func (p problem) String() string { return fmt.Sprintf("%s:%s:%s: %s", p.file, p.object, p.key, p.msg) }

func lintCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lint", flag.ContinueOnError)
	var files fileList
	fs.Var(&files, "f", "manifest file, directory (its *.yaml, *.yml, *.json, recursively) or - for standard input; repeatable")
	fs.Var(&files, "filename", "same as -f")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	files = append(files, pos...)
	if len(files) == 0 {
		return usageError{"lint needs -f FILE|DIR|-"}
	}
	var probs []problem
	objects := 0
	for _, f := range files {
		p, n, err := lintPath(f, stdin)
		if err != nil {
			return err
		}
		probs = append(probs, p...)
		objects += n
	}
	for _, p := range probs {
		fmt.Fprintln(stdout, p)
	}
	if len(probs) > 0 {
		fmt.Fprintf(stderr, "kubectl-kubeshaper lint: %d problem(s) in %d object(s) checked\n", len(probs), objects)
		return errFound
	}
	fmt.Fprintf(stderr, "kubectl-kubeshaper lint: %d object(s) checked, no problems\n", objects)
	return nil
}

// lintPath lints a file, a directory's manifests, or standard input ("-").
func lintPath(path string, stdin io.Reader) ([]problem, int, error) {
	if path == "-" {
		data, err := io.ReadAll(stdin)
		if err != nil {
			return nil, 0, err
		}
		p, n := lintData("-", data)
		return p, n, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	var files []string
	if st.IsDir() {
		err := filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					files = append(files, p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
		sort.Strings(files)
	} else {
		files = []string{path}
	}
	var out []problem
	total := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, 0, err
		}
		p, n := lintData(f, data)
		out = append(out, p...)
		total += n
	}
	return out, total, nil
}

// lintData lints every document of a (multi-document) YAML or JSON file.
func lintData(file string, data []byte) ([]problem, int) {
	var out []problem
	objects := 0
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		where := fmt.Sprintf("document %d", doc)
		if err != nil {
			out = append(out, problem{file, where, "-", fmt.Sprintf("cannot read YAML: %v", err)})
			break
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			out = append(out, problem{file, where, "-", fmt.Sprintf("not YAML: %v", err)})
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(js, &obj); err != nil || obj == nil {
			continue // a scalar or list document: not a Kubernetes object
		}
		n, p := lintObject(file, obj)
		objects += n
		out = append(out, p...)
	}
	return out, objects
}

// templatePaths is where each kind carries the pod annotations the agent
// reads; the agent reads no other object's annotations but Services'.
var templatePaths = map[string][]string{
	"Deployment":            {"spec", "template", "metadata", "annotations"},
	"StatefulSet":           {"spec", "template", "metadata", "annotations"},
	"DaemonSet":             {"spec", "template", "metadata", "annotations"},
	"ReplicaSet":            {"spec", "template", "metadata", "annotations"},
	"ReplicationController": {"spec", "template", "metadata", "annotations"},
	"Job":                   {"spec", "template", "metadata", "annotations"},
	"PodTemplate":           {"template", "metadata", "annotations"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template", "metadata", "annotations"},
}

func lintObject(file string, obj map[string]any) (int, []problem) {
	kind, _ := obj["kind"].(string)
	if strings.HasSuffix(kind, "List") {
		items, _ := obj["items"].([]any)
		n := 0
		var out []problem
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				k, p := lintObject(file, m)
				n += k
				out = append(out, p...)
			}
		}
		return n, out
	}
	name := objectName(kind, obj)
	own, _ := dig(obj, "metadata", "annotations").(map[string]any)
	switch kind {
	case "Pod", "Service":
		return 1, checkAnnotations(file, name, own, "")
	}
	var out []problem
	for _, k := range sortedKeys(own) {
		if isKubeshaperKey(k) {
			hint := "kubeshaper reads the annotations of Pods and Services only"
			if _, ok := templatePaths[kind]; ok {
				hint = fmt.Sprintf("no effect on the %s itself: kubeshaper reads its pods' annotations (%s)", kind, strings.Join(templatePaths[kind][:len(templatePaths[kind])-1], ".")+".annotations")
			}
			out = append(out, problem{file, name, k, hint})
		}
	}
	if path, ok := templatePaths[kind]; ok {
		tmpl, _ := dig(obj, path...).(map[string]any)
		out = append(out, checkAnnotations(file, name, tmpl, "pod template: ")...)
	}
	return 1, out
}

// checkAnnotations applies the agent's own grammar (pkg/rules) to one
// object's annotations: invalid values (the agent's Event text), unknown
// kubeshaper.io keys (the agent ignores them), values that are not strings.
func checkAnnotations(file, name string, ann map[string]any, prefix string) []problem {
	strs := map[string]string{}
	var out []problem
	for _, k := range sortedKeys(ann) {
		if !isKubeshaperKey(k) {
			continue
		}
		v, ok := ann[k].(string)
		if !ok {
			out = append(out, problem{file, name, k, prefix + fmt.Sprintf("the value must be a string (quote it): got %v", ann[k])})
			continue
		}
		strs[k] = v
		if !knownKey(k) {
			out = append(out, problem{file, name, k, prefix + "unknown key, ignored by the agent: kubeshaper reads " + strings.Join(allKeys(), ", ")})
		}
		if k == reconcile.MonitorAnnotation && !strings.EqualFold(v, "true") && !strings.EqualFold(v, "false") {
			out = append(out, problem{file, name, k, prefix + fmt.Sprintf("want \"true\" or \"false\", got %q (anything but \"false\" counts the pod)", v)})
		}
	}
	_, errs := rules.ParseAnnotations(strs)
	_, lerrs := rules.ParseTimeLimit(strs)
	errs = append(errs, lerrs...)
	for _, e := range errs {
		out = append(out, problem{file, name, e.Key, prefix + e.Error()})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

func isKubeshaperKey(k string) bool {
	return strings.HasPrefix(k, rules.Prefix) || k == rules.KeyEgressBandwidth || k == rules.KeyIngressBandwidth
}

func allKeys() []string {
	keys := append(rules.AnnotationKeys(), rules.KeyUntil, rules.KeyDuration, reconcile.MonitorAnnotation)
	sort.Strings(keys)
	return keys
}

func knownKey(k string) bool {
	for _, x := range allKeys() {
		if x == k {
			return true
		}
	}
	return false
}

func objectName(kind string, obj map[string]any) string {
	name, _ := dig(obj, "metadata", "name").(string)
	if name == "" {
		name, _ = dig(obj, "metadata", "generateName").(string)
	}
	if kind == "" {
		kind = "(no kind)"
	}
	if ns, _ := dig(obj, "metadata", "namespace").(string); ns != "" {
		return kind + "/" + ns + "/" + name
	}
	return kind + "/" + name
}

func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
