// The demo page the channels app serves at `/` (kept in the binary: no files at runtime).
#pragma once

namespace dohost::objects {

inline constexpr char kChannelsDemoPage[] = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dohost channels</title></head>
<body><h1>dohost channels</h1></body></html>
)html";

}  // namespace dohost::objects
