# Packages of the install layout (CPack): a .deb and a .tar.gz. Besides what the targets install
# (bin/gpushare, lib*/gpushare/..., headers, CMake and pkg-config files), they hold the licence and
# changelog (share/doc/gpushare/), the agent's systemd unit (lib/systemd/system/) and an example
# policy. scripts/package.sh builds both; docs/packaging.md describes them.
#   cpack --config build/CPackConfig.cmake -G DEB   (or -G TGZ), from the build folder

install(FILES LICENSE CHANGELOG.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES examples/systemd/policy.toml DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# The unit runs the installed command: its ExecStart names this build's bin folder. The .deb is
# installed at this same prefix (below), so it is right there; a .tar.gz is meant to be unpacked
# into it.
file(READ examples/systemd/gpushare-agent.service gpushare_unit)
set(gpushare_unit_exec "ExecStart=/usr/bin/gpushare ")
string(FIND "${gpushare_unit}" "${gpushare_unit_exec}" gpushare_unit_exec_at)
if(gpushare_unit_exec_at LESS 0)
  message(FATAL_ERROR "examples/systemd/gpushare-agent.service: no '${gpushare_unit_exec}' line to point at the install")
endif()
string(REPLACE "${gpushare_unit_exec}" "ExecStart=${CMAKE_INSTALL_FULL_BINDIR}/gpushare " gpushare_unit "${gpushare_unit}")
file(GENERATE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/systemd/gpushare-agent.service CONTENT "${gpushare_unit}")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
  "${PROJECT_SOURCE_DIR}/examples/systemd/gpushare-agent.service")
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/systemd/gpushare-agent.service DESTINATION lib/systemd/system)

set(CPACK_PACKAGE_NAME gpushare)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "gpushare")
set(CPACK_PACKAGE_CONTACT "gpushare maintainers <gpushare@users.noreply.github.com>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "Shares NVIDIA GPUs between programs: hard memory quotas and exact shares of GPU time")
set(CPACK_PACKAGE_DESCRIPTION
  "gpushare runs programs as tenants of a GPU: an LD_PRELOAD library over the CUDA driver API enforces\n\
memory quotas and time slices. The package holds the gpushare command, the preload library, the NVML\n\
shadow library, the node agent (isolation mode) with its systemd unit, and the Prometheus exporter.")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR "DEB;TGZ")
set(CPACK_PACKAGE_CHECKSUM SHA256)
set(CPACK_STRIP_FILES OFF)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_LICENSE "Apache-2.0")
# Depends: from the programs' NEEDED libraries (dpkg-shlibdeps), e.g. libcpp-httplib0.11 for the
# exporter, libtomlplusplus3 for the agent. The NVML forwarder's own folder is private.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS
  "${CMAKE_INSTALL_FULL_LIBDIR}/gpushare;${CMAKE_INSTALL_FULL_LIBDIR}/gpushare/nvml;${CMAKE_INSTALL_FULL_LIBDIR}/gpushare/nvml/real")

# Per generator: the .deb installs at this build's prefix (where the unit and the compiled-in
# relative paths expect it); the .tar.gz stays relocatable, its files under one top folder.
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_CURRENT_BINARY_DIR}/CPackProjectConfig.cmake)
file(GENERATE OUTPUT ${CPACK_PROJECT_CONFIG_FILE} CONTENT
"if(CPACK_GENERATOR STREQUAL \"DEB\")
  set(CPACK_PACKAGING_INSTALL_PREFIX \"${CMAKE_INSTALL_PREFIX}\")
endif()
")
include(CPack)
