package reconcile

import (
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

type objectWithMeta interface {
	runtime.Object
	GetNamespace() string
	GetName() string
	GetUID() types.UID
}

func objKey(o objectWithMeta, reason string) string {
	return string(o.GetUID()) + "/" + reason
}

func joinErrors(errs []*rules.AnnotationError) string {
	if len(errs) == 0 {
		return ""
	}
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}
