// Command kstatus prints the kstatus verdict of one Kubernetes object, computed by the
// same library Flux and kpt use (sigs.k8s.io/cli-utils/pkg/kstatus/status), so tests can
// check that mfa-operator's status is read the way GitOps tools read it.
//
// Usage: kstatus < object.json (or object.yaml); prints {"status":"...","message":"..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	// JSON is YAML, so one path reads both.
	data, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("parsing the object: %w", err)
	}
	// The apimachinery decoder keeps whole numbers int64, as the API machinery does
	// (encoding/json would make metadata.generation a float64 that kstatus refuses).
	var object map[string]interface{}
	if err := utiljson.Unmarshal(data, &object); err != nil {
		return fmt.Errorf("the input is no object: %w", err)
	}
	result, err := status.Compute(&unstructured.Unstructured{Object: object})
	if err != nil {
		return fmt.Errorf("computing status: %w", err)
	}
	return json.NewEncoder(out).Encode(struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	}{string(result.Status), result.Message})
}
