// Everything an object author needs.
#pragma once

#include "dohost/durable_object.h"
#include "dohost/errors.h"
#include "dohost/http.h"
#include "dohost/jwt.h"
#include "dohost/log.h"
#include "dohost/object_id.h"
#include "dohost/object_state.h"
#include "dohost/registry.h"
#include "dohost/settings.h"
#include "dohost/storage.h"
#include "dohost/time.h"
#include "dohost/websocket.h"
