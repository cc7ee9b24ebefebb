package server

import (
	"errors"
	"strings"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/linkage/personnummer"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// approvalFromRules reads the approved variables and sources of a
// project's rules, refusing what extract would not accept (extract's
// Approval.Check: every variable's source among the approved sources, each
// tied to a built-in profile or a custom one that parses), naming the
// field (under prefix, such as "rules").
func approvalFromRules(prefix string, r *lopnrv1.ProjectRules) (extract.Approval, error) {
	a := extract.Approval{AllowPersonnummer: r.GetAllowPersonnummer()}
	if len(r.GetApprovedVariables()) == 0 {
		return a, &fieldError{prefix + "approved_variables", "at least one approved variable"}
	}
	for i, v := range r.GetApprovedVariables() {
		if v.GetSource() == "" || v.GetColumn() == "" {
			return a, &fieldError{field(prefix+"approved_variables", i), "a source and a column"}
		}
		a.Variables = append(a.Variables, extract.ApprovedVariable{Source: v.GetSource(), Column: v.GetColumn(), Transforms: v.GetTransforms()})
	}
	for _, s := range r.GetApprovedSources() {
		a.Sources = append(a.Sources, extract.ApprovedSource{Name: s.GetName(), Profile: s.GetProfile(), ProfileYAML: s.GetProfileYaml()})
	}
	if err := a.Check(); err != nil {
		var ae *extract.ApprovalError
		var fe *linkage.FieldError
		if errors.As(err, &ae) && len(ae.Errors) > 0 && errors.As(ae.Errors[0], &fe) {
			path := fe.Path
			if rest, ok := strings.CutPrefix(path, "sources"); ok {
				path = "approved_sources" + rest
			} else if rest, ok := strings.CutPrefix(path, "variables"); ok {
				path = "approved_variables" + rest
			}
			return a, &fieldError{prefix + path, personnummer.Redact(fe.Msg)}
		}
		return a, &fieldError{prefix + "approved_sources", personnummer.Redact(err.Error())}
	}
	return a, nil
}

// RulesProto is an approved list and recipients as the API's
// ProjectRules: how the server shows them, and how clients that read an
// approved list from a file send them.
func RulesProto(a extract.Approval, recipients []string) *lopnrv1.ProjectRules {
	out := &lopnrv1.ProjectRules{AllowPersonnummer: a.AllowPersonnummer, Recipients: recipients}
	for _, v := range a.Variables {
		out.ApprovedVariables = append(out.ApprovedVariables, &lopnrv1.ApprovedVariable{Source: v.Source, Column: v.Column, Transforms: v.Transforms})
	}
	for _, s := range a.Sources {
		out.ApprovedSources = append(out.ApprovedSources, &lopnrv1.ApprovedSource{Name: s.Name, Profile: s.Profile, ProfileYaml: s.ProfileYAML})
	}
	return out
}
