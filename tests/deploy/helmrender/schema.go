package main

// values.schema.json checking as Helm 3 does it: the coalesced values are
// turned into JSON and validated with xeipuuv/gojsonschema (the library Helm
// 3 uses); a failure lists every error as "- field: description".

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

// ValidateValues checks values against the chart's schema; nil without one.
func ValidateValues(chart *Chart, values map[string]interface{}) error {
	if chart.Schema == nil {
		return nil
	}
	valuesYAML, err := yaml.Marshal(values)
	if err != nil {
		return err
	}
	valuesJSON, err := yaml.YAMLToJSON(valuesYAML)
	if err != nil {
		return err
	}
	if bytes.Equal(valuesJSON, []byte("null")) {
		valuesJSON = []byte("{}")
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(chart.Schema),
		gojsonschema.NewBytesLoader(valuesJSON))
	if err != nil {
		return fmt.Errorf("%s/values.schema.json: %w", chart.Metadata.Name, err)
	}
	if result.Valid() {
		return nil
	}
	var sb strings.Builder
	for _, e := range result.Errors() {
		fmt.Fprintf(&sb, "- %s\n", e)
	}
	return fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n%s",
		chart.Metadata.Name, sb.String())
}
