// `krypton service`: a tenant's services, created and listed at governance.

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/kryptonkms/krypton/governance"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func servicesTable(w io.Writer, svcs []*kv1.GovernanceServiceInfo) error {
	var rows [][]string
	for _, sv := range svcs {
		state := "active"
		if sv.GetRevoked() {
			state = "revoked"
		}
		rows = append(rows, []string{sv.GetName(), state, timeText(sv.GetCreatedAt()), strconv.FormatUint(sv.GetCursor(), 10)})
	}
	return table(w, []string{"Service", "State", "Created", "Event"}, rows)
}

func serviceCommand() *command {
	return &command{
		name: "service", synopsis: "create and list a tenant's services (governance)",
		help: "Services of a tenant, registered at governance; every region of the tenant creates the service's key (L3) from the feed.",
		sub:  []*command{serviceCreateCommand(), serviceListCommand()},
	}
}

func serviceCreateCommand() *command {
	return govCommand(clientSpec{
		name: "create", synopsis: "register a service of a tenant", usage: "<tenant> <service>",
		help:  "Registers <service> of <tenant> at governance and emits a create-service event to the tenant's regions.",
		write: true,
		check: exactArgs(2, "<tenant> <service>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			sv, err := c.gov().CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Service: fs.Arg(1)})
			if err != nil {
				return err
			}
			return c.output(s.out, sv, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Created service %s/%s: event %d\n", sv.GetTenant(), sv.GetName(), sv.GetCursor())
				return err
			})
		},
	})
}

func serviceListCommand() *command {
	return govCommand(clientSpec{
		name: "list", synopsis: "list a tenant's services", usage: "<tenant>",
		check: exactArgs(1, "<tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			all := &kv1.GovernanceListServicesResponse{}
			for token := ""; ; {
				resp, err := c.gov().ListServices(ctx, &kv1.GovernanceListServicesRequest{Tenant: fs.Arg(0), PageSize: governance.MaxPageSize, PageToken: token})
				if err != nil {
					return err
				}
				all.Services = append(all.Services, resp.GetServices()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			return c.output(s.out, all, func(w io.Writer) error { return servicesTable(w, all.GetServices()) })
		},
	})
}
