package main

// Template rendering with Helm 3's semantics: Go text/template with sprig's
// functions (less env and expandenv, which Helm removes) plus Helm's own
// include, tpl, required, fail, toYaml/fromYaml, toJson/fromJson and lookup;
// the top-level object has .Values, .Release, .Chart, .Capabilities,
// .Template and .Files; missing keys print nothing ("<no value>" is removed,
// as Helm does in non-strict mode).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

// Release is what templates read as .Release.
type Release struct {
	Name      string
	Namespace string
	Revision  int
	IsInstall bool
	IsUpgrade bool
	Service   string
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k KubeVersion) String() string { return k.Version }

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

// Has reports whether the API version (or "version/Kind") is available.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// Capabilities is .Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
}

// Files is .Files: the chart's non-template files.
type Files map[string][]byte

func (f Files) Get(name string) string      { return string(f[name]) }
func (f Files) GetBytes(name string) []byte { return f[name] }
func (f Files) Lines(name string) []string {
	if f[name] == nil {
		return []string{}
	}
	return strings.Split(strings.TrimSuffix(string(f[name]), "\n"), "\n")
}

// Glob returns the files whose path matches the pattern (path.Match syntax).
func (f Files) Glob(pattern string) Files {
	out := Files{}
	for name, data := range f {
		if ok, _ := path.Match(pattern, name); ok {
			out[name] = data
		}
	}
	return out
}

// AsConfig renders the files as ConfigMap data (base name -> content).
func (f Files) AsConfig() string {
	m := map[string]string{}
	for name, data := range f {
		m[path.Base(name)] = string(data)
	}
	return toYAML(m)
}

// Rendered is one template's output.
type Rendered struct {
	Name    string // "strata/templates/x.yaml"
	Content string
}

// Engine renders one chart with one set of values.
type Engine struct {
	chart        *Chart
	values       map[string]interface{}
	release      Release
	capabilities Capabilities
}

const recursionLimit = 1000

func (e *Engine) topLevel(templateName string) map[string]interface{} {
	return map[string]interface{}{
		"Values":       e.values,
		"Release":      e.release,
		"Chart":        e.chart.Metadata,
		"Capabilities": e.capabilities,
		"Files":        e.chart.Files,
		"Template": map[string]interface{}{
			"Name":     templateName,
			"BasePath": e.chart.Metadata.Name + "/templates",
		},
	}
}

// funcMap builds the function map; include and tpl close over `t`.
func (e *Engine) funcMap(t *template.Template, included map[string]int) template.FuncMap {
	functions := sprig.TxtFuncMap()
	delete(functions, "env")
	delete(functions, "expandenv")
	functions["toYaml"] = toYAML
	functions["mustToYaml"] = func(v interface{}) (string, error) {
		data, err := yaml.Marshal(v)
		return strings.TrimSuffix(string(data), "\n"), err
	}
	functions["fromYaml"] = fromYAML
	functions["fromYamlArray"] = fromYAMLArray
	functions["toJson"] = toJSON
	functions["mustToJson"] = func(v interface{}) (string, error) {
		data, err := json.Marshal(v)
		return string(data), err
	}
	functions["fromJson"] = fromJSON
	functions["fromJsonArray"] = fromJSONArray
	functions["required"] = func(message string, value interface{}) (interface{}, error) {
		if value == nil {
			return value, errors.New(markMessage(message))
		}
		if s, ok := value.(string); ok && s == "" {
			return value, errors.New(markMessage(message))
		}
		return value, nil
	}
	functions["fail"] = func(message string) (string, error) { return "", errors.New(markMessage(message)) }
	functions["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil // no cluster: what `helm template` returns
	}
	functions["include"] = func(name string, data interface{}) (string, error) {
		if included[name] > recursionLimit {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		included[name]++
		defer func() { included[name]-- }()
		var out strings.Builder
		if err := t.ExecuteTemplate(&out, name, data); err != nil {
			return "", err
		}
		return out.String(), nil
	}
	functions["tpl"] = func(text string, data interface{}) (string, error) {
		clone, err := t.Clone()
		if err != nil {
			return "", err
		}
		clone.Funcs(e.funcMap(clone, included))
		const name = "tpl-input"
		if _, err := clone.New(name).Parse(text); err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var out strings.Builder
		if err := clone.ExecuteTemplate(&out, name, data); err != nil {
			return "", fmt.Errorf("error calling tpl: %w", err)
		}
		return strings.ReplaceAll(out.String(), "<no value>", ""), nil
	}
	return functions
}

// Render renders every template whose base name does not start with "_"
// (NOTES.txt only when notes is true), in name order.
func (e *Engine) Render(notes bool) ([]Rendered, error) {
	included := map[string]int{}
	t := template.New("gotpl").Option("missingkey=zero")
	t.Funcs(e.funcMap(t, included))
	prefix := e.chart.Metadata.Name + "/"
	names := sortedTemplateNames(e.chart.Templates)
	for _, name := range names {
		if _, err := t.New(prefix + name).Parse(e.chart.Templates[name]); err != nil {
			return nil, fmt.Errorf("parse error in %s%s: %w", prefix, name, err)
		}
	}
	var out []Rendered
	for _, name := range names {
		base := path.Base(name)
		isNotes := base == "NOTES.txt"
		if strings.HasPrefix(base, "_") || isNotes != notes {
			continue
		}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, prefix+name, e.topLevel(prefix+name)); err != nil {
			return nil, cleanupExecError(err)
		}
		content := strings.ReplaceAll(buf.String(), "<no value>", "")
		out = append(out, Rendered{Name: prefix + name, Content: content})
	}
	return out, nil
}

// Manifests splits rendered templates into YAML documents, drops empty ones,
// and checks that each parses (Helm refuses a release whose YAML does not).
func Manifests(rendered []Rendered) (string, error) {
	var out strings.Builder
	for _, r := range rendered {
		for _, doc := range splitDocuments(r.Content) {
			var parsed interface{}
			if err := yaml.Unmarshal([]byte(doc), &parsed); err != nil {
				return "", fmt.Errorf("YAML parse error on %s: %w\n%s", r.Name, err, doc)
			}
			if parsed == nil {
				continue
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", r.Name, doc)
		}
	}
	return out.String(), nil
}

func splitDocuments(content string) []string {
	var docs []string
	var current []string
	for _, line := range strings.Split(content, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			docs = append(docs, strings.Join(current, "\n"))
			current = nil
			continue
		}
		current = append(current, line)
	}
	docs = append(docs, strings.Join(current, "\n"))
	var kept []string
	for _, d := range docs {
		if strings.TrimSpace(d) != "" {
			kept = append(kept, strings.Trim(d, "\n"))
		}
	}
	return kept
}

// Messages of fail and required are marked so that the error a user sees
// is the message itself, not the chain of template calls (Helm does this).
var markedMessage = regexp.MustCompile(`HELM\[(.*)\]HELM`)

func markMessage(message string) string { return "HELM[" + message + "]HELM" }

// cleanupExecError turns "template: LOCATION: executing ...: HELM[msg]HELM"
// into "execution error at (LOCATION): msg", as Helm reports it.
func cleanupExecError(err error) error {
	var execError template.ExecError
	if !errors.As(err, &execError) {
		return err
	}
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) != 3 {
		return err
	}
	if parts := markedMessage.FindStringSubmatch(tokens[2]); len(parts) >= 2 {
		return fmt.Errorf("execution error at (%s): %s", tokens[1], parts[1])
	}
	return err
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return "" // Helm swallows the error here too
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(text string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(text), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(text string) []interface{} {
	var a []interface{}
	if err := yaml.Unmarshal([]byte(text), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(text string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(text string) []interface{} {
	var a []interface{}
	if err := json.Unmarshal([]byte(text), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}
