package server

import (
	"context"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lopnr/lopnr/extract"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server/authz"
)

// deliveryRecord is a published delivery as the server keeps it.
type deliveryRecord struct {
	ID         string         `json:"id"`
	Project    string         `json:"project"`
	Job        string         `json:"job"`
	Submitter  string         `json:"submitter"`
	Created    time.Time      `json:"created"`
	Files      []deliveryFile `json:"files"`
	Location   string         `json:"location"`
	SigningKey string         `json:"signing_key"`
	// Report is the linkage-quality report, as text: counts only.
	Report     string    `json:"report"`
	ReleasedBy string    `json:"released_by,omitempty"`
	ReleasedAt time.Time `json:"released_at,omitzero"`
}

type deliveryFile struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Format string `json:"format"`
	Rows   int64  `json:"rows"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Codebook is the name of the file's codebook, delivered beside it.
	Codebook string `json:"codebook"`
}

// names lists every file of the delivery, the data files first.
func (d deliveryRecord) names() []string {
	var out []string
	for _, f := range d.Files {
		out = append(out, f.Name)
	}
	for _, f := range d.Files {
		if f.Codebook != "" && !slices.Contains(out, f.Codebook) {
			out = append(out, f.Codebook)
		}
	}
	return append(out, deliveryExtras...)
}

// The files of every delivery besides the data files.
var deliveryExtras = []string{"manifest.json", "manifest.json.sig", "README.txt"}

func (d deliveryRecord) proto() *lopnrv1.Delivery {
	out := &lopnrv1.Delivery{Id: d.ID, Project: d.Project, Job: d.Job, Submitter: d.Submitter, Created: timestamppb.New(d.Created),
		Released: d.ReleasedBy != "", ReleasedBy: d.ReleasedBy, Location: d.Location, SigningKey: d.SigningKey}
	if !d.ReleasedAt.IsZero() {
		out.ReleasedAt = timestamppb.New(d.ReleasedAt)
	}
	for _, f := range d.Files {
		out.Files = append(out.Files, &lopnrv1.DeliveryFile{Name: f.Name, Source: f.Source, Format: f.Format, Rows: f.Rows, Size: f.Size, Sha256: f.SHA256})
	}
	return out
}

type deliveryService struct {
	lopnrv1.UnimplementedDeliveryServiceServer
	s *Server
}

// seesUnreleased reports whether the caller sees a project's deliveries
// before release: everyone who may list them but researchers.
func (s *Server) seesUnreleased(ctx context.Context, project string) bool {
	roles := s.cfg.Policy.Roles(call(ctx).identity, project)
	return slices.ContainsFunc(roles, func(r authz.Role) bool {
		return r == authz.Extractor || r == authz.Approver || r == authz.Auditor || r == authz.Admin
	})
}

func (ds deliveryService) ListDeliveries(ctx context.Context, req *lopnrv1.ListDeliveriesRequest) (*lopnrv1.ListDeliveriesResponse, error) {
	if req.GetProject() == "" {
		return nil, &fieldError{"project", "the project whose deliveries to list"}
	}
	all, err := ds.s.deliveries.list()
	if err != nil {
		return nil, err
	}
	unreleased := ds.s.seesUnreleased(ctx, req.GetProject())
	out := &lopnrv1.ListDeliveriesResponse{}
	for _, d := range all {
		if d.Project == req.GetProject() && (unreleased || d.ReleasedBy != "") {
			out.Deliveries = append(out.Deliveries, d.proto())
		}
	}
	slices.SortFunc(out.Deliveries, func(a, b *lopnrv1.Delivery) int { return b.Created.AsTime().Compare(a.Created.AsTime()) })
	return out, nil
}

// delivery returns a delivery of the project the request names: a
// delivery of another project is not found, whatever its id.
func (s *Server) delivery(project, id string) (deliveryRecord, error) {
	d, err := s.deliveries.get(id)
	if err == nil && d.Project != project {
		return deliveryRecord{}, &notFoundError{"delivery", id}
	}
	return d, err
}

func (ds deliveryService) ReleaseDelivery(ctx context.Context, req *lopnrv1.ReleaseDeliveryRequest) (*lopnrv1.Delivery, error) {
	s, ci := ds.s, call(ctx)
	d, err := s.delivery(req.GetProject(), req.GetDelivery())
	if err != nil {
		return nil, err
	}
	ci.job = d.Job
	if d.Submitter == ci.identity {
		return nil, &fourEyesError{"the person who submitted a job may not release its delivery; ask another approver"}
	}
	if d.ReleasedBy != "" {
		return nil, &stateError{"delivery " + d.ID + " was released by " + d.ReleasedBy}
	}
	d, err = s.deliveries.update(d.ID, func(d *deliveryRecord) error {
		if d.ReleasedBy != "" {
			return &stateError{"delivery " + d.ID + " was released by " + d.ReleasedBy}
		}
		d.ReleasedBy, d.ReleasedAt = ci.identity, s.cfg.Clock().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d.proto(), nil
}

func (ds deliveryService) PresignDelivery(ctx context.Context, req *lopnrv1.PresignDeliveryRequest) (*lopnrv1.PresignDeliveryResponse, error) {
	s, ci := ds.s, call(ctx)
	d, err := s.delivery(req.GetProject(), req.GetDelivery())
	if err != nil {
		return nil, err
	}
	ci.job = d.Job
	if d.ReleasedBy == "" {
		return nil, &stateError{"delivery " + d.ID + " is not released yet: an approver other than the submitter releases it"}
	}
	expiry := extract.DefaultExpiry
	if req.GetExpiry() != nil {
		expiry = req.GetExpiry().AsDuration()
	}
	all, names := d.names(), req.GetFiles()
	if len(names) == 0 {
		names = all
	}
	until := s.cfg.Clock().Add(expiry)
	out := &lopnrv1.PresignDeliveryResponse{}
	for i, name := range names {
		if !slices.Contains(all, name) {
			return nil, &fieldError{field("files", i), "the name of a file of the delivery"}
		}
		u, err := s.cfg.Sink.Presign(ctx, d.Project, d.ID, name, expiry)
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, &lopnrv1.PresignedFile{Name: name, Url: u, Expires: timestamppb.New(until)})
	}
	return out, nil
}
