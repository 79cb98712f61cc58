// The dashboard: GET /ui on the admin listener, one page (HTML, CSS and JavaScript kept in the
// binary, dashboard_page.h) that reads the admin API from the browser. The page itself is
// guarded by the admin token like the API; a browser cannot send a Bearer header when it
// navigates, so /ui also takes the token as `?token=` (the login form sends it so), and the
// page then keeps it in sessionStorage and sends it as a Bearer header with every request.
#pragma once

#include <string_view>

#include "dohost/host.h"
#include "dohost/http.h"

namespace dohost {

bool isDashboardPath(std::string_view path);  // "/ui" or "/ui/"
// The page (200), or a login form (401) when a token is set and the request lacks it.
Response handleDashboard(const HostOptions& options, const Request& request);

}  // namespace dohost
