package reliability

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

// putPodInEtcd writes a Pod straight into etcd, the way kube-apiserver
// stores it (protobuf, "k8s\x00" prefix, under /registry), while the
// apiserver is down: the change another apiserver of an HA control plane
// would have accepted during this node's outage. It uses etcd's JSON
// gateway, so no etcd client is needed.
func putPodInEtcd(env *kubeenv.Env, pod *corev1.Pod) error {
	p := pod.DeepCopy()
	p.TypeMeta.APIVersion, p.TypeMeta.Kind = "v1", "Pod"
	p.ResourceVersion = "" // the apiserver derives it from etcd's revision
	var buf bytes.Buffer
	if err := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme).Encode(p, &buf); err != nil {
		return fmt.Errorf("encoding the pod: %w", err)
	}
	key := fmt.Sprintf("/registry/pods/%s/%s", p.Namespace, p.Name)
	body, _ := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString(buf.Bytes()),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, env.EtcdURL()+"/v3/kv/put", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("etcd put %s: %w", key, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd put %s: HTTP %d: %s", key, resp.StatusCode, out)
	}
	return nil
}
